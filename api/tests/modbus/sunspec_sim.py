"""A Modbus TCP battery for the integration tests, served with pymodbus.

Serves the `sunspec-802` register map on unit 1 with fixed measurements:
  python sunspec_sim.py PORT
Prints "ready" once listening; stops on SIGTERM.
"""
import asyncio
import sys

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncTcpServer


def s16(v: int) -> int:
    return v & 0xFFFF


def registers() -> dict[int, int]:
    r = {a: 0 for a in range(40000, 40040)}
    r[40000], r[40001] = 0x5375, 0x6E53  # "SunS"
    r[40002], r[40003] = 802, 36
    r[40010], r[40030] = 765, s16(-1)    # SoC 76.5 %
    r[40011], r[40031] = 931, s16(-1)    # SoH 93.1 %
    r[40012], r[40013] = 0, 412          # 412 cycles
    r[40014], r[40032] = 5120, s16(-2)   # 51.20 V
    r[40015], r[40033] = s16(-125), s16(-1)  # -12.5 A
    r[40016], r[40034] = s16(-64), 1     # -640 W
    r[40017], r[40018], r[40036] = 3412, 3189, s16(-3)  # cells 3.412 / 3.189 V
    r[40019], r[40020], r[40021], r[40035] = 301, 224, 245, s16(-1)  # 30.1 / 22.4 / 24.5 °C
    return r


async def main(port: int) -> None:
    regs = registers()
    values = [0] * 40100
    for address, value in regs.items():
        values[address] = value
    # pymodbus devices address their blocks from 1: request address a reads values[a].
    block = ModbusSequentialDataBlock(1, values)
    context = ModbusServerContext(devices={1: ModbusDeviceContext(hr=block)}, single=False)
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, lambda: print("ready", flush=True))
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
