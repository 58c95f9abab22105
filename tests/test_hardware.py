"""The hardware catalog: one source of prices and datasheet figures, overridable in settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from optimodel.operator import cost, hardware
from optimodel.operator.hardware import (
    CPU,
    DEFAULT_CPU_REPLICA,
    DEFAULT_GPUS,
    HardwareCatalog,
    UnknownHardwareError,
)
from optimodel.operator.settings import OperatorSettings, SettingsError, parse_settings


def test_every_gpu_has_both_prices_and_the_datasheet_figures() -> None:
    for gpu in DEFAULT_GPUS.values():
        assert gpu.kind == "gpu" and gpu.rated, gpu.name
        assert gpu.spot_usd_per_hour is not None
        assert 0 < gpu.spot_usd_per_hour < gpu.on_demand_usd_per_hour, gpu.name
        assert gpu.memory_gib and gpu.fp16_tflops and gpu.int8_tops
        # Dense int8 is twice dense fp16 on every tensor-core generation listed.
        assert gpu.int8_tops == pytest.approx(2 * gpu.fp16_tflops, rel=0.02), gpu.name
    assert DEFAULT_CPU_REPLICA.kind == "cpu" and DEFAULT_CPU_REPLICA.rated
    assert DEFAULT_CPU_REPLICA.fp16_tflops is None  # no fp16 arithmetic on the CPU replica
    assert DEFAULT_CPU_REPLICA.peak_ops_per_second("fp16") is None


def test_the_budget_code_reads_its_prices_from_the_catalog() -> None:
    assert cost.DEFAULT_GPU_PRICES_USD_PER_HOUR is hardware.DEFAULT_GPU_PRICES_USD_PER_HOUR
    catalog = cost.PriceCatalog()
    for name, gpu in DEFAULT_GPUS.items():
        assert catalog.gpu_price(name) == gpu.on_demand_usd_per_hour
        assert catalog.gpu_price(name, "spot") == gpu.spot_usd_per_hour
    assert catalog.cpu_replica_price() == DEFAULT_CPU_REPLICA.on_demand_usd_per_hour
    assert catalog.cpu_replica_price("spot") == DEFAULT_CPU_REPLICA.spot_usd_per_hour


def test_spot_is_never_charged_above_on_demand() -> None:
    catalog = HardwareCatalog.with_overrides(on_demand_prices={"nvidia-l4": 0.0})  # owned GPUs
    assert catalog.get("nvidia-l4").price("spot") == 0.0
    prices = cost.PriceCatalog.from_hardware(catalog)
    assert prices.gpu_price("nvidia-l4", "spot") == 0.0
    # A type added by price alone has no spot price: spot nodes cost what on-demand ones do.
    added = cost.PriceCatalog.from_settings({"acme-x1": 2.0})
    assert added.gpu_price("acme-x1", "spot") == 2.0


def test_overrides_merge_field_by_field_and_never_change_the_defaults() -> None:
    catalog = HardwareCatalog.with_overrides(
        {
            "nvidia-l4": {"spot_usd_per_hour": 0.2},
            CPU: {"on_demand_usd_per_hour": 0.2},
            "acme-x1": {"on_demand_usd_per_hour": 2.0, "memory_bandwidth_gb_per_s": 1000},
        }
    )
    l4 = catalog.get("nvidia-l4")
    assert (l4.on_demand_usd_per_hour, l4.spot_usd_per_hour) == (0.70, 0.2)
    assert l4.fp16_tflops == DEFAULT_GPUS["nvidia-l4"].fp16_tflops
    assert catalog.get(CPU).on_demand_usd_per_hour == 0.2
    acme = catalog.get("acme-x1")
    assert acme.memory_bandwidth_gb_per_s == 1000 and not acme.rated  # no fp32 figure
    assert DEFAULT_GPUS["nvidia-l4"].spot_usd_per_hour == 0.28
    assert catalog.names[-1] == CPU and catalog.names[0] == "nvidia-t4"


def test_unknown_type_names_the_field_and_the_fix() -> None:
    with pytest.raises(UnknownHardwareError, match=r"spec.serving.gpu.type: 'nvidia-b300'.*fix"):
        HardwareCatalog().get("nvidia-b300")


def test_settings_carry_the_hardware_entries_to_both_catalogs() -> None:
    settings = parse_settings(
        {
            "hardware": {
                "nvidia-l4": {"onDemandUSDPerHour": 0.81, "spotUSDPerHour": 0.32},
                "cpu": {"spotUSDPerHour": 0.02},
            },
            "gpuPrices": {"nvidia-h100": 4.5},
        },
        {},
        "test",
    )
    prices = settings.price_catalog
    assert prices.gpu_price("nvidia-l4") == 0.81 and prices.gpu_price("nvidia-l4", "spot") == 0.32
    assert prices.gpu_price("nvidia-h100") == 4.5
    assert prices.cpu_replica_price("spot") == 0.02
    assert settings.hardware_catalog.get("nvidia-l4").fp16_tflops == 121
    assert settings.gpu_price_catalog["nvidia-l4"] == 0.81


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"hardware": {"acme-x1": {"spotUSDPerHour": 1.0}}}, "acme-x1: a new type needs"),
        ({"hardware": {"NVIDIA L4": {"spotUSDPerHour": 1.0}}}, "not a hardware type name"),
        ({"hardware": {"nvidia-l4": {"spotUSDPerHour": -1}}}, "spotUSDPerHour"),
        ({"hardware": {"nvidia-l4": {"tflops": 3}}}, "tflops"),
    ],
)
def test_bad_hardware_settings_stop_the_operator_with_the_field(
    document: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_settings(document, {}, "test")


def test_settings_model_rejects_an_incomplete_new_type() -> None:
    with pytest.raises(ValidationError, match="onDemandUSDPerHour"):
        OperatorSettings.model_validate({"hardware": {"acme-x1": {"memoryGiB": 8}}})
