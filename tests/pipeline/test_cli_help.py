"""The pipeline's flags take their defaults from the library, and --help prints them."""

import re

from beam_pipelines import preprocess
from beam_pipelines.ingest import song_chunks
from beam_pipelines.ingest.fetch import FetchConfig
from beam_pipelines.ingest.song_chunks import ChunkingConfig


def _help_text() -> str:
    """--help's flag list on one line."""
    text = preprocess.build_parser().format_help()
    return " ".join(text[text.index("options:"):].split())  # the flags, unwrapped


def _default_shown(flag: str, text: str) -> str:
    """The default --help shows for `flag` (the help up to the next flag)."""
    entry = re.search(rf"--{flag} \S+ (.*?)(?= --[a-z]|$)", text).group(1)
    return re.search(r"\(default: ([^)]*)\)", entry).group(1)


def test_help_prints_each_default_and_it_is_the_librarys():
    text = _help_text()
    args, _ = preprocess.build_parser().parse_known_args(["--input=x", "--output_dir=y"])
    expected = {"split": song_chunks.DEFAULT_SPLIT,
                "num_shards": song_chunks.AUTO_NUM_SHARDS,
                "sample_rate": ChunkingConfig.sample_rate,
                "context_samples": ChunkingConfig.context_samples,
                "max_song_bytes": FetchConfig.max_bytes,
                "fetch_attempts": FetchConfig.max_attempts}
    for flag, value in expected.items():
        assert getattr(args, flag) == value, flag
        assert _default_shown(flag, text) == str(value), flag
    assert "--output_dir OUTPUT_DIR the dataset directory to write --" in text  # no None
