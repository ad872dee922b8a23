"""The quality tiers `run --quality` names (light: no torch import, so the command line can list them).

standard  the device's default scale: on a CPU, the tests the `make report` budget powers;
thorough  on a CPU, longer runs on more seeds with a learning-rate sweep per width and depth arm
          (instruments/proxy.py THOROUGH); on a GPU the full-shape scale already powers every test.
"""

TIERS = ("standard", "thorough")
