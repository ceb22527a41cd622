from sigma_wmi.cli import main

main()
