"""The one error type the CLI turns into a one-line message and a non-zero exit."""

from datagen.errors import DatagenError


class TrainError(DatagenError):
    pass
