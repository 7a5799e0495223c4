import sys
from pathlib import Path

# The pipeline modules are imported by name, as FlowerPower does.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
