"""Image curation: sources (folders, WebDataset tars, URL parquets), stages, the Ray runner and
the ``curate`` job. See docs/CURATION.md."""
