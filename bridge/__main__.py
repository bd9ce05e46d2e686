from bridge.app import main
from common.cli import run_main

run_main(main)
