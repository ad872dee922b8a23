"""The report's kit, below the measurements: a section with its tables and figures (sections.py), the
formats of a value (format.py) and the charts (figures.py). Each measurement builds its section from it;
the report package above assembles the sections, the claims and the remedies into the report."""
