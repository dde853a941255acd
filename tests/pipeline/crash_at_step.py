"""Test only: the pipeline's command line, killed (os._exit(70), no clean-up) at the K-th
step of putting its dataset in place, as a real kill would.

    python tests/pipeline/crash_at_step.py K [preprocess flags...]
"""

import os
import sys

from beam_pipelines import output_folder, preprocess


def main() -> None:
    crash_at = int(sys.argv[1])

    def die(done: int) -> None:
        if done == crash_at:
            os._exit(70)

    output_folder.after_step = die
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    preprocess.main()


if __name__ == "__main__":
    main()
