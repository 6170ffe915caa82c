"""Environment probes and the tegrastats parser, on sample lines in the formats NVIDIA's boards print."""

import json

from edgeseg.core.sysinfo import environment, library_versions, parse_tegrastats_line, summary

NANO = ("RAM 2448/3964MB (lfb 1x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [12%@1479,5%@1479,8%@1479,off] EMC_FREQ 4%@1600 GR3D_FREQ 37%@921 APE 25 PLL@32C CPU@35C "
        "PMIC@100C GPU@33.5C AO@40C thermal@34.25C POM_5V_IN 2473/2473 POM_5V_GPU 412/400 POM_5V_CPU 494/494")  # fmt: skip
XAVIER_NX = ("RAM 2813/7772MB (lfb 83x4MB) SWAP 0/3886MB (cached 0MB) CPU [3%@1190,2%@1190,0%@1190,1%@1190,off,off] "
             "EMC_FREQ 0% GR3D_FREQ 0% AUX@32C CPU@33.5C thermal@32.55C AO@33C GPU@32C PMIC@100C "
             "VDD_IN 4001/4001 VDD_CPU_GPU_CV 490/490 VDD_SOC 1469/1469")  # fmt: skip
ORIN_NANO_JP5 = ("RAM 2306/7620MB (lfb 1076x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,0%@729,0%@729,0%@729,off,off] "
                 "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305] VIC_FREQ 115 APE 200 CV0@-256C CPU@46.843C SOC2@44.875C "
                 "SOC0@45.187C CV1@-256C GPU@-256C tj@46.843C SOC1@45.375C CV2@-256C "
                 "VDD_IN 4727mW/4727mW VDD_CPU_GPU_CV 594mW/594mW VDD_SOC 1386mW/1386mW")  # fmt: skip
ORIN_JP6 = ("11-24-2026 10:00:00 RAM 3012/7620MB (lfb 4x4MB) SWAP 0/3810MB (cached 0MB) "
            "CPU [5%@1510,2%@1510,7%@1510,0%@1510,3%@1510,1%@1510] GR3D_FREQ 45% cpu@48.5C soc2@46.1C "
            "tj@48.5C VDD_IN 4721mW/4721mW VDD_CPU_GPU_CV 1234mW/1234mW VDD_SOC 1400mW/1400mW")  # fmt: skip
NO_TOTAL_RAIL = "RAM 1000/2000MB CPU [10%@1000] GR3D_FREQ 5% VDD_GPU 800/800 VDD_CPU 700/700"


def test_jetson_nano_line():
    parsed = parse_tegrastats_line(NANO)
    assert (parsed["ram_used_mb"], parsed["ram_total_mb"]) == (2448, 3964)
    assert parsed["cpu_load"] == [12, 5, 8, None] and parsed["gpu_load_pct"] == 37
    assert parsed["power_mw"] == 2473 and parsed["rails_mw"]["POM_5V_GPU"] == 412
    assert parsed["temperatures_c"]["GPU"] == 33.5 and parsed["temperatures_c"]["thermal"] == 34.25


def test_xavier_nx_line():
    parsed = parse_tegrastats_line(XAVIER_NX)
    assert parsed["power_mw"] == 4001 and parsed["gpu_load_pct"] == 0
    assert parsed["cpu_load"] == [3, 2, 0, 1, None, None] and parsed["ram_total_mb"] == 7772
    assert set(parsed["rails_mw"]) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}


def test_orin_lines_with_milliwatt_units():
    jp5, jp6 = parse_tegrastats_line(ORIN_NANO_JP5), parse_tegrastats_line(ORIN_JP6)
    assert jp5["power_mw"] == 4727 and jp5["rails_mw"]["VDD_SOC"] == 1386 and jp5["temperatures_c"]["tj"] == 46.843
    assert jp5["temperatures_c"]["GPU"] == -256.0  # an off sensor, as printed
    assert jp6["power_mw"] == 4721 and jp6["gpu_load_pct"] == 45 and len(jp6["cpu_load"]) == 6
    assert jp6["rails_mw"]["VDD_CPU_GPU_CV"] == 1234 and jp6["ram_used_mb"] == 3012


def test_power_is_the_sum_of_rails_without_a_total_rail():
    assert parse_tegrastats_line(NO_TOTAL_RAIL)["power_mw"] == 1500
    assert parse_tegrastats_line("garbage")["power_mw"] is None


def test_environment_is_complete_and_serialisable():
    env = environment(threads=2)
    assert {"cpu", "logical_cores", "threads", "os", "python", "libraries", "gpu", "jetson"} <= set(env)
    assert env["libraries"]["numpy"] and env["libraries"]["opencv"] and env["threads"] == 2
    json.dumps(env)
    assert "threads 2" in summary(env)
    assert set(library_versions()) >= {"onnxruntime", "tensorrt", "torch"}
