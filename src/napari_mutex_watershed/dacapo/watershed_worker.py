"""Worker file for ``segment_blockwise``: a mutex watershed of every block, with context.

Each block reads its read ROI (the write ROI grown by the context, clipped to the input),
segments it with :func:`napari_mutex_watershed.segment`, keeps the write ROI and writes it
with ids no other block uses (see ``block_unique_ids``). Blocks are not stitched: a cell
cut by a block border keeps one id per block. For one stitched segmentation use
``WatershedPostProcessor.process`` or the CLI, which run the project's blockwise engine.
``min_size`` and ``threshold`` apply to the pieces inside each block.

Arguments (pass them to ``segment_blockwise`` as keywords)::

    from napari_mutex_watershed.dacapo import WATERSHED_WORKER, segment_blockwise

    segment_blockwise(
        WATERSHED_WORKER, context, total_roi, read_roi, write_roi, num_workers=2,
        input_array_identifier=LocalArrayIdentifier("in.zarr", "affinities"),
        output_array_identifier=LocalArrayIdentifier("in.zarr", "fragments"),
        parameters=WatershedParameters(bias=0.5),  # or WatershedPostProcessorParameters,
                                                   # a dict of WatershedParameters fields, None
        mask_array_identifier=LocalArrayIdentifier("in.zarr", "mask"),  # optional
    )

The output (uint64, the input's spatial axes and voxel size, covering ``total_roi``, chunked
by the write ROI so that parallel blocks never share a chunk) is created if it does not
exist; an existing one must match. Offsets come from the parameters, else from the input's
``offsets`` attribute. Voxels where the mask (same voxel size as the input) is 0, or which it
does not cover, stay 0. Seeds need the stitch: ``WatershedPostProcessor.process`` takes them.
"""

from __future__ import annotations

from funlib.geometry import Roi

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.attributes import PARAMETERS_ATTR
from napari_mutex_watershed.dacapo import (
    LocalArrayIdentifier,
    WatershedPostProcessorParameters,
    ZarrArray,
    block_unique_ids,
    require_block_aligned_chunks,
)
from napari_mutex_watershed.errors import InvalidInputError
from napari_mutex_watershed.parameters import as_parameters, named_fields
from napari_mutex_watershed.storage.inputs import stored_offsets

# every block writes only its own write ROI and reads only the input: no conflicts
read_write_conflict = False
fit = "shrink"


def resolve_parameters(parameters, input_array: ZarrArray) -> WatershedParameters:
    """The ``WatershedParameters`` for this input, from any accepted form of ``parameters``;
    the offsets the input stores unless they give some (one line when they do not and the
    stored ones cannot be read)."""
    if parameters is not None and not isinstance(
            parameters, dict | WatershedParameters | WatershedPostProcessorParameters):
        raise InvalidInputError(
            "parameters must be WatershedParameters, WatershedPostProcessorParameters, a dict "
            f"or None, got {type(parameters).__name__}"
        )
    value = input_array.attrs.get("offsets") or None  # (an empty list: none stored)
    stored, problem = stored_offsets(value, input_array) if value is not None else (None, None)
    named = (bool(parameters.offsets) if isinstance(parameters, WatershedPostProcessorParameters)
             else "offsets" in named_fields(parameters))
    if problem is not None and not named:
        raise InvalidInputError(f"{problem}; give the offsets instead")
    if isinstance(parameters, WatershedPostProcessorParameters):
        n = len(parameters.offsets or stored or ())
        channels = list(range(n)) if n and input_array.num_channels > n else None
        return parameters.watershed_parameters(input_array.voxel_size, stored, channels)
    return as_parameters(parameters, offsets=stored)  # one line for a bad value or name


def open_mask(mask_array_identifier, source: ZarrArray) -> ZarrArray | None:
    """The mask, refused with one line unless it is on the input's voxel grid."""
    if mask_array_identifier is None:
        return None
    mask = ZarrArray.open_from_array_identifier(mask_array_identifier, mode="r")
    if mask.num_channels is not None or mask.voxel_size != source.voxel_size:
        raise InvalidInputError(
            f"the mask {mask} (voxel size {tuple(mask.voxel_size)}, channels "
            f"{mask.num_channels}) is not on the voxel grid of {source} (voxel size "
            f"{tuple(source.voxel_size)}): it needs the same voxel size and no channel axis")
    return mask


def init_callback_fn(input_array_identifier: LocalArrayIdentifier,
                     output_array_identifier: LocalArrayIdentifier, parameters=None,
                     mask_array_identifier: LocalArrayIdentifier | None = None, *,
                     total_roi: Roi, write_roi: Roi) -> None:
    """Before any block: check the ROI and the mask, create the output over ``total_roi``
    chunked by the write ROI (or check an existing one), and record the parameters in its
    attributes."""
    source = ZarrArray.open_from_array_identifier(input_array_identifier, mode="r")
    if not source.roi.contains(total_roi):
        raise InvalidInputError(f"the total ROI {total_roi} is not inside the input {source} "
                                f"({source.roi}): every block must have affinities to read")
    open_mask(mask_array_identifier, source)
    resolved = resolve_parameters(parameters, source)
    output = ZarrArray.create_from_array_identifier(
        output_array_identifier, source.spatial_axes, total_roi, None, source.voxel_size,
        "uint64", mode="a", write_size=write_roi.shape,
    )
    require_block_aligned_chunks(output, total_roi, write_roi)
    output.add_metadata({PARAMETERS_ATTR: resolved.model_dump(mode="json")})


def spawn_worker(input_array_identifier: LocalArrayIdentifier,
                 output_array_identifier: LocalArrayIdentifier, parameters=None,
                 mask_array_identifier: LocalArrayIdentifier | None = None) -> dict:
    """Once per worker process: open the arrays, resolve the parameters."""
    input_array = ZarrArray.open_from_array_identifier(input_array_identifier, mode="r")
    return {
        "input_array": input_array,
        "output_array": ZarrArray.open_from_array_identifier(output_array_identifier),
        "watershed_parameters": resolve_parameters(parameters, input_array),
        "mask_array": open_mask(mask_array_identifier, input_array),
    }


def start_worker(block, input_array_identifier, output_array_identifier, parameters=None,
                 mask_array_identifier=None, *, input_array: ZarrArray,
                 output_array: ZarrArray, watershed_parameters: WatershedParameters,
                 mask_array: ZarrArray | None = None) -> None:
    """One block: segment read ROI, crop to write ROI, write unique ids. The read ROI grows
    to whole voxels (a context need not be a multiple of the voxel size)."""
    read = block.read_roi.snap_to_grid(input_array.voxel_size, mode="grow").intersect(
        input_array.roi)
    write = block.write_roi.intersect(output_array.roi)
    if write.empty:
        return
    mask = None if mask_array is None else mask_array[read] > 0  # 0 where it does not reach
    labels = segment(input_array[read], watershed_parameters, mask=mask)
    voxel_size = input_array.voxel_size
    begin = (write.offset - read.offset) / voxel_size
    crop = tuple(slice(int(b), int(b + s)) for b, s in zip(begin, write.shape / voxel_size))
    output_array[Roi(write.offset, write.shape)] = block_unique_ids(
        labels[crop], write, output_array.roi, voxel_size
    )
