"""datatrove's standard 4-stage MinHash dedup (its README example), 64-bit hashes, defaults.

    datatrove_minhash.py INPUT_DIR OUT_DIR CORES

INPUT_DIR holds *.jsonl.gz or *.parquet files (fields `text` and `id`). The signature and filter
stages run one task per input file, so datatrove's (task, document) numbering is whale's (input
file, record) order, which its keep rule depends on (whale's `--scheme=datatrove` reproduces it).

Cluster ids are saved and written into each duplicate's metadata (`minhash_cluster_id`), so that
run.py can also compare the clusters themselves: datatrove keeps the union-find root of a cluster
(union by size), not necessarily its first document, while whale keeps the first (oldest dump,
then smallest id).
"""

import glob
import os
import sys

from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader, ParquetReader
from datatrove.pipeline.writers.jsonl import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.typeshelper import Languages

inp, out, cores = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = MinhashConfig(hash_config=HashConfig(precision=64))  # 5-grams, 14 x 8: the defaults
logs = f"{out}/logs"


# `_`-prefixed files (whale's `_removed.parquet`) are not documents.
PATTERN = "[!_]*.parquet"
parquet = bool(glob.glob(os.path.join(inp, PATTERN)))
files = len(glob.glob(os.path.join(inp, PATTERN if parquet else "*.jsonl.gz")))


def reader():
    if parquet:
        return ParquetReader(inp, glob_pattern=PATTERN, text_key="text", id_key="id")
    return JsonlReader(inp, glob_pattern="*.jsonl.gz", text_key="text", id_key="id")


if __name__ == "__main__":
    stage1 = LocalPipelineExecutor(
        pipeline=[reader(), MinhashDedupSignature(output_folder=f"{out}/signatures", config=config, language=Languages.english)],
        tasks=files, workers=cores, logging_dir=f"{logs}/signatures",
    )
    stage2 = LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=f"{out}/signatures", output_folder=f"{out}/buckets", config=config)],
        tasks=config.num_buckets, workers=cores, logging_dir=f"{logs}/buckets", depends=stage1,
    )
    stage3 = LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=f"{out}/buckets", output_folder=f"{out}/remove_ids", config=config,
                                      save_cluster_id=True)],
        tasks=1, logging_dir=f"{logs}/clusters", depends=stage2,
    )
    stage4 = LocalPipelineExecutor(
        pipeline=[
            reader(),
            MinhashDedupFilter(input_folder=f"{out}/remove_ids", exclusion_writer=JsonlWriter(f"{out}/removed"),
                               load_cluster_ids=True),
            JsonlWriter(output_folder=f"{out}/output"),
        ],
        tasks=files, workers=cores, logging_dir=f"{logs}/filter", depends=stage3,
    )
    stage4.run()
