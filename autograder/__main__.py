"""`python -m autograder`: the command line of the lab and the grader."""

import sys

from autograder.cli import main

sys.exit(main())
