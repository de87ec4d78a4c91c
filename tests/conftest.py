import pytest
import torch

from ffbench.core.log import show_on_stderr


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Test models are tiny: they gain nothing from threads, and on a shared CPU extra threads stall."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def messages_on_stderr():
    """ffbench's log records on stderr as the command line shows them, also for library calls made directly."""
    show_on_stderr()


@pytest.fixture
def write_suite(tmp_path):
    """Write a suite file into ``tmp_path``: ``write_suite(toml_text, name="suite") -> Path``."""

    def write(text: str, name: str = "suite"):
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        return path

    return write


@pytest.fixture
def record_steps(monkeypatch):
    """Replace ``module.step`` so each optimizer step records which units of ``model`` got gradient:
    a list with one set of unit indices (or "head") per step."""

    def install(module, model):
        touched = []

        def recording_step(opt, loss):
            for p in model.parameters():
                p.grad = None
            loss.backward()
            touched.append(
                {
                    n.split(".")[2] if n.startswith("backbone") else "head"
                    for n, p in model.named_parameters()
                    if p.grad is not None and p.grad.abs().sum() > 0
                }
            )
            opt.step()

        import ffbench.core.method

        monkeypatch.setattr(ffbench.core.method, "step", recording_step)  # the unit loop's steps
        if hasattr(module, "step"):
            monkeypatch.setattr(module, "step", recording_step)  # a method's read-out steps
        return touched

    return install
