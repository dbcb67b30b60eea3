"""labkeep: research data management for labs and imaging/sequencing facilities."""

from labkeep.errors import LabkeepError
from labkeep.keep import Keep
from labkeep.results import Report, Result

__version__ = "0.1.0"
__all__ = ["Keep", "LabkeepError", "Report", "Result", "__version__"]
