from common.lifecycle import run_main
from dashboard.cli import main

run_main(main)
