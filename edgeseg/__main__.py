from edgeseg.cli import run

run()
