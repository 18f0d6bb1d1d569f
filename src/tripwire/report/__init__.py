"""Reports: figures (ROC curves, score histograms) and Markdown tables, shared by `tripwire demo`
and `tripwire bench`."""
