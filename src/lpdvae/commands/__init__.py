"""Light declarations of the commands whose step module imports torch, pandas or Great
Expectations: each module here adds its parser without importing the step; the handler does."""
