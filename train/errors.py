"""The one error type the CLI turns into a one-line message and a non-zero exit."""


class TrainError(RuntimeError):
    pass
