"""Where the job process runs the relabel and the pyramid itself."""

from napari_mutex_watershed import WatershedParameters
from napari_mutex_watershed.blockwise.job import IN_PROCESS_VOXELS, relabels_here
from napari_mutex_watershed.blockwise.plan import BlockwisePlan


def make_plan(shape, **options) -> BlockwisePlan:
    return BlockwisePlan(input_path="i", output_path="o", work_dir="w",
                         parameters=WatershedParameters(), roi_offset=(0, 0, 0), shape=shape,
                         block_size=(64, 128, 128), **options)


def test_small_local_regions_relabel_in_the_job_and_large_or_cluster_ones_in_workers():
    assert IN_PROCESS_VOXELS == 256**3  # the benchmark's crops relabel in the job
    assert relabels_here(make_plan((256, 256, 256)))
    assert not relabels_here(make_plan((256, 256, 257)))  # work grows, a worker start does not
    # cluster workers run on other machines: the job process stays light
    assert not relabels_here(make_plan((64, 128, 128), worker_command="sbatch {command}"))
