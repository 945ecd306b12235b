from hydro_serving.cli.main import main

main()
