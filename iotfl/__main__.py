from iotfl.cli import main

main()
