"""The MLflow UI in a real (headless) Chromium: the sweep's trials and their curves are there."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import MlflowServer, free_port

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make setup-browser)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No sandbox as root in CI; no background networking on a closed network.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1600,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_caviar_ui_lands_on_the_trials_compared_not_the_genai_start_page(swept, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = MlflowServer(swept.folder, free_port())
    server.start()
    try:
        printed = [line for line in server.log.read_text().splitlines() if "compared:" in line]
        assert printed, f"caviar ui names no page to open:\n{server.log.read_text()}"
        landing = printed[-1].split("compared: ", 1)[1].strip()
        assert landing.startswith(server.url)
        browser.get(landing)
        wait = WebDriverWait(browser, 60)
        page = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
        wait.until(lambda _: "coarse-000" in page() and "val_accuracy" in page())
        text = page()
        assert "Welcome to MLflow" not in text, "the GenAI start page"
        assert "Model training" in text and "Parameters" in text and "Metrics" in text
        trial_names = {f"coarse-{n:03d}" for n in range(8)} | {
            f"fine-{n:03d}" for n in range(8, 14)
        }
        shown = {name for name in trial_names if name in text}
        assert len(shown) >= 8, f"trial runs on the first page: {sorted(shown)}"
        headers = browser.find_elements(By.CSS_SELECTOR, "[role='columnheader']")
        columns = {h.text.strip() for h in headers}
        assert {"val_accuracy", "lr", "momentum"} <= columns, sorted(columns)
    finally:
        browser.save_screenshot(str(tmp_path / "mlflow-ui.png"))
        server.stop()
    assert (tmp_path / "mlflow-ui.png").stat().st_size > 10_000
