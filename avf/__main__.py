from avf.cli.app import main

main()
