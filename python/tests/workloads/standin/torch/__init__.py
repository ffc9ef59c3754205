"""A stand-in for torch (not installed where the tests run) that prints when lem synchronises a device."""


class cuda:  # noqa: N801 (torch's name)
    @staticmethod
    def is_initialized():
        return True

    @staticmethod
    def device_count():
        return 2

    @staticmethod
    def synchronize(device=None):
        print("SYNC", device, flush=True)
