import pytest

from trainables.asc.metrics import device_metrics


def test_device_wise_accuracy_by_hand():
    predictions = [0, 1, 1, 0, 2, 2, 0, 1]
    labels = [0, 1, 0, 0, 2, 1, 1, 1]
    devices = ["a", "a", "a", "b", "s4", "s4", "s5", "s5"]
    m = device_metrics(predictions, labels, devices, train_devices=["a", "b"], n_classes=3)
    assert m["acc_a"] == pytest.approx(2 / 3)
    assert m["acc_b"] == 1.0
    assert m["acc_s4"] == 0.5 and m["acc_s5"] == 0.5
    assert m["acc_seen"] == pytest.approx(3 / 4)  # pooled over a and b
    assert m["acc_unseen"] == pytest.approx(2 / 4)
    assert m["acc"] == pytest.approx((2 / 3 + 1 + 0.5 + 0.5) / 4)  # mean of devices
    # class 0: 2 of 3 right, class 1: 2 of 4, class 2: 1 of 1
    assert m["macro_acc"] == pytest.approx((2 / 3 + 2 / 4 + 1) / 3)


def test_device_groups_as_the_baseline_reports_them():
    predictions = [0, 1, 1, 0, 0, 1, 0, 0]
    labels = [0, 1, 0, 0, 0, 0, 0, 1]
    devices = ["a", "b", "c", "s1", "s2", "s3", "s4", "s6"]
    m = device_metrics(predictions, labels, devices, train_devices=["a", "b", "c", "s1", "s2", "s3"], n_classes=2)
    assert m["acc_real"] == pytest.approx(2 / 3)  # pooled over a, b, c
    assert m["acc_sim_seen"] == pytest.approx(2 / 3)  # s1, s2, s3
    assert m["acc_seen"] == pytest.approx(4 / 6) and m["acc_unseen"] == pytest.approx(1 / 2)
    few = device_metrics([0, 1], [0, 0], ["a", "s4"], train_devices=["a"], n_classes=2)
    assert few["acc_real"] == 1.0 and few["acc_sim_seen"] != few["acc_sim_seen"], "no seen simulated device: NaN"
