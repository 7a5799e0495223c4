"""medallion: build and operate bronze/silver/gold lakehouse pipelines on Delta Lake.

The library API lives in the modules below; the command line (``medallion_cli.cli``) is a
thin skin over it. Importing this package is cheap: heavy libraries (polars, deltalake,
flowerpower, duckdb, pandera) load inside the functions that need them.
"""

__version__ = "0.1.0"
