"""StreamTally collector: receive, open, parse, admit, strip and key reports."""
