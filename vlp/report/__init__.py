"""`vlp report RUN_DIR`: one self-contained HTML page about a run (`write_report`)."""
from vlp.lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {"write_report": "page", "report_html": "page"})
