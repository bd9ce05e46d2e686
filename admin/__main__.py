from admin.cli import main
from common.lifecycle import run_main

run_main(main)
