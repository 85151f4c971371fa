from controller.cli import run

run()
