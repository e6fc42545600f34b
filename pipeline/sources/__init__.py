"""Raw sources to documents: books, Reddit -> WebText scraping, Common Crawl extraction."""
