"""``medallion docs``: a static report site (lineage, tables, runs, quality) and its catalog.

:mod:`.catalog` gathers the data (one JSON-ready dict), :mod:`.layout` places the lineage
graph, :mod:`.render` turns the catalog into HTML pages, :mod:`.site` writes them and serves
them. Nothing here prints.
"""
