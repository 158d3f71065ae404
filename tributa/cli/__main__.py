from tributa.cli import main

main()
