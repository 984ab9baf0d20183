from aishell.cli import main

main()
