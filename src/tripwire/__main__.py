from tripwire.cli import main

main()
