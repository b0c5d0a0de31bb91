import sys
from pathlib import Path

# The NumPy references live beside the tests; the package itself is imported from the install.
sys.path.insert(0, str(Path(__file__).parent))
