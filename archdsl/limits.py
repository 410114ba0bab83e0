"""archdsl's budgets, in one place (documented in docs/limits.md).

Every input is hostile: a spec of a kilobyte must not take minutes or gigabytes, and a file
handed to a command must not make it read forever. Each budget, when exceeded, is a located
error that names it (`exceeded`). They are far above what any real network needs: the largest
spec in the zoo elaborates to under 2,000 nodes, nests under 10 deep, and computes no integer
above 2**40.
"""

from __future__ import annotations

# ---- files: a spec and what it includes
MAX_FILE_BYTES = 1 << 20           # one spec or include file (1 MiB)
MAX_TOTAL_BYTES = 4 << 20          # a spec with all its includes together
MAX_FILES = 256                    # files one spec brings in (itself and its includes)

# ---- the syntax tree and expressions
MAX_SYNTAX_DEPTH = 200             # levels of the parse tree: brackets, blocks, operator chains
MAX_LITERAL_DIGITS = 40            # digits of one number in the text
MAX_INT_BITS = 64                  # |integer| < 2**64 after every operation of an expression

# ---- elaboration
MAX_NESTING = 64                   # blocks, groups and joins inside one another
MAX_BLOCK_DEPTH = 64               # blocks calling blocks
MAX_NODES = 50_000                 # graph nodes of one architecture
MAX_STEPS = 500_000                # statements elaborated (repetition counted), nodes or not
MAX_DIM = (1 << 31) - 1            # one dimension of a tensor (channels, height, width...)
MAX_ELEMENTS = 1 << 40             # elements of one tensor (per image)

# ---- command lines
MAX_SETTINGS = 1_000               # architectures one command elaborates (--set a=1,2,3 ...)
MAX_INPUT_RANK = 8                 # dimensions of a shape given on a command line (import --input)

# ---- training (archdsl train / eval)
MAX_SCALE = 8                      # a recipe's image side (scale, scale_max, test_scale) / crop
MAX_EPOCHS = 1_000_000             # epochs of one run
MAX_WORKERS = 64                   # DataLoader worker processes per training process
MAX_THREADS = 1_024                # torch threads per process
MAX_CACHE_MIB = 1 << 20            # --cache-limit (MiB): 1 TiB

# ---- output
MAX_TABLE_ROWS = 1_000             # rows of a rich table (text formats are not capped)

# ---- errors
MAX_ERRORS = 50                    # errors collected before a pass stops
MAX_SYNTAX_REPARSE_BYTES = 8 << 20  # text re-parsed to find further syntax errors

# ---- files archdsl keeps
MAX_BUILD_CACHE_BYTES = 8 << 30    # the libraries `stats --latency` caches (least recently used go)

# ---- files archdsl reads that are not specs
MAX_JSON_BYTES = 64 << 20          # a manifest, a tuning database's note or record file


def exceeded(what: str, limit: int, unit: str = "") -> str:
    """The hint of an error for a budget exceeded: names the limit and where it is written."""
    return (f"archdsl's limit on {what} is {limit:,}{unit} (archdsl/limits.py, "
            "docs/limits.md)")
