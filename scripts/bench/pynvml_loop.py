# Peer for the exporter benchmark: the polling approach Python tools use. Reads NVML field 186 (instantaneous
# power) at 50 Hz and the total-energy counter at 10 Hz on GPU 0, writing "<unix ns> <power mW> [<energy mJ>]"
# lines until SIGTERM.
import signal, sys, time
import pynvml

stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)

pynvml.nvmlInit()
h = pynvml.nvmlDeviceGetHandleByIndex(0)

def value(fv):
    t = fv.valueType
    if t == pynvml.NVML_VALUE_TYPE_DOUBLE:
        return fv.value.dVal
    if t == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT:
        return fv.value.uiVal
    return fv.value.ullVal

with open(sys.argv[1], "w") as out:
    k, nxt = 0, time.time()
    while not stop:
        fv = pynvml.nvmlDeviceGetFieldValues(h, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
        line = f"{time.time_ns()} {value(fv)}"
        if k % 5 == 0:
            line += f" {pynvml.nvmlDeviceGetTotalEnergyConsumption(h)}"
        out.write(line + "\n")
        k += 1
        nxt += 0.02
        time.sleep(max(0.0, nxt - time.time()))
