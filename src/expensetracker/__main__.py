from expensetracker.cli import main

main()
