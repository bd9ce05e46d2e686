import sys

from scripts.demo.pipeline import main

sys.exit(main())
