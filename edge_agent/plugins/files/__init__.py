"""files: browse, upload, download and stage data on an edge."""
