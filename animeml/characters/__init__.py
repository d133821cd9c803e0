"""Characters and tags: face classifiers and the colour tagger."""
