from brewcli.cli import main

main()
