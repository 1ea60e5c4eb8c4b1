"""Train: a network trained in the background on FER2013 or your own faces, followed live, saved by name;
the queue of every lane's jobs, and the models trained here, which can be deleted."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from fer_core.base.errors import DataError, FerError
from fer_core.faces.preprocess import Preprocessing
from fer_core.registry.store import DEFAULT_NAME, ModelStore
from fer_core.service.charts import confusion_matrix_figure, training_curves
from fer_core.service.jobs import ACTIVE_STATES, JobState
from fer_core.service.queues import job_queue
from fer_core.service.uploads import resolve_server_path, server_data_roots, spool_upload
from fer_core.service.work import submit_training
from fer_core.training.ensemble import starting_networks
from fer_core.training.networks import ARCHITECTURES, describe
from fer_core.training.recipe import CLASS_WEIGHTS, TrainConfig
from ui.display import existing_model, key_figures, name_problem, user_errors
from ui.jobs import job_now, remember_job, remembered_job, show_job
from ui.sidebar import sidebar

STATUS_TEXT = {"loading": "Loading and checking the data", "training": "Training", "saving": "Evaluating and saving"}
RANDOM_START = "random weights"
STOP_REASONS = {"completed": "all epochs ran", "early_stopping": "validation accuracy stopped improving",
                "time_budget": "the time budget was used up",
                "finished": "stopped by you; the best epoch, or the weight average, so far kept",
                "cancelled": "cancelled"}

sidebar()
st.title("Train a network")
jobs = job_queue()
my_job = job_now(remembered_job("train_job_id"))


@st.fragment(run_every=1.0)
def follow(job: JobState) -> None:
    """Progress, ETA, live curves and stop buttons of this session's running job, refreshed every second."""
    job = job_now(job.job_id) or job  # the fragment's rerun reads the job anew
    status = job.status
    if status not in ACTIVE_STATES:
        st.rerun()
    progress = job.progress
    if status == "training" and progress is not None:
        eta = "" if progress.eta_seconds is None else f", about {progress.eta_seconds / 60:.1f} min left"
        text = f"Epoch {progress.epoch}/{progress.epochs}, batch {progress.batch}/{progress.batches}{eta}"
    else:
        text = f"{STATUS_TEXT[status]}..."  # one of ACTIVE_STATES, checked above
    st.progress(job.fraction or 0.0, text=text)
    if progress is not None:
        loss, accuracy = st.columns(2)
        loss.metric("Training loss (this epoch)", f"{progress.loss:.3f}")
        accuracy.metric("Training accuracy (this epoch)", f"{progress.accuracy:.1%}")
    history = job.epochs()
    if history:
        st.plotly_chart(training_curves(history), key="live-curves")
    finish, cancel = st.columns(2)
    if finish.button("Stop and save", key="train_finish", disabled=job.finish_requested,
                     help="End the run now and save its best weights so far (or their mean so far, "
                          "with weight averaging)."):
        with user_errors():
            jobs.finish(job.job_id)
            st.toast("Stopping after the current batch; the model is then evaluated and saved...")
    if cancel.button("Cancel training", key="train_cancel", help="End the run now and save nothing."):
        with user_errors():
            jobs.cancel(job.job_id)
            st.toast("Cancelling after the current batch...")


@st.fragment(run_every=2.0)
def queue_overview() -> None:
    """Every lane's running and waiting jobs, refreshed every two seconds."""
    st.subheader("Queue")
    rows: list[dict[str, str]] = []
    with user_errors():
        rows = jobs.overview()
    if rows:
        st.dataframe(rows, hide_index=True)
    st.caption("Each lane runs its jobs in the order they were submitted: FER2013-size trainings in one, short "
               "fine-tunes in another, side by side." + ("" if rows else " No job is running or waiting."))


def show_outcome(job: JobState) -> None:
    """How this session's last job ended: the saved model's figures, or why it did not finish."""
    if job.status == "failed":
        st.error(job.error)
    elif job.status == "cancelled":
        st.warning(f"Training of '{job.model_name}' was cancelled; nothing was saved.")
    elif job.card is not None:
        card = job.card
        st.success(f"Saved as '{job.model_name}' after {card.training.epochs_run} epoch(s) in "
                   f"{card.training.minutes} min ({STOP_REASONS.get(job.stopped, job.stopped)}). "
                   "Choose it in the sidebar, or compare it on the Compare page.")
        key_figures(card)
        st.caption(f"Measured on {card.faces_scored} validation faces; to repeat the run: `{card.reproduce}`")
        history = job.epochs()
        if history:
            st.plotly_chart(training_curves(history), key="final-curves")
        normalised = st.toggle("Normalised confusion matrix", key="train_normalised")
        st.plotly_chart(confusion_matrix_figure(card.metrics, normalised, "Confusion matrix (validation)"),
                        key="final-matrix")


def training_form() -> None:
    """A new training's data, architecture and recipe; starts the job and remembers it for this session."""
    st.subheader("New training")
    with user_errors():
        if jobs.queue("train"):
            st.caption("A training is running: a new one waits its turn in the queue below.")
    roots = server_data_roots()
    sources = ["Upload a file", "Path on the server"] if roots else ["Upload a file"]
    source = st.radio("Training data", sources, horizontal=True, key="train_source")
    if source == "Upload a file":
        upload = st.file_uploader("FER2013 CSV (.csv or .csv.gz) or a zip of class folders (angry/, happy/, ...)",
                                  type=["csv", "gz", "zip"], key="train_upload")
        path_text = ""
    else:
        upload = None
        path_text = st.text_input(f"FER2013 CSV(.gz), class-folder tree or zip inside {', '.join(map(str, roots))}",
                                  key="train_path")
    arch = st.selectbox("Architecture", list(ARCHITECTURES), key="train_arch",
                        index=list(ARCHITECTURES).index(TrainConfig.arch),
                        format_func=lambda name: f"{name}: {describe(name)}")
    networks = starting_networks(ModelStore(), arch, Preprocessing.from_dict(TrainConfig().preprocessing))
    start = st.selectbox("Start from", [RANDOM_START, *networks], key="train_start_from",
                         help="Fine-tune a stored network of this architecture (to adapt it to your own faces, say) "
                              "instead of starting from random weights; a lower learning rate (1e-4 to 5e-4) "
                              "keeps what it learnt.")
    epochs_column, minutes_column, batch_column, rate_column = st.columns(4)
    epochs = epochs_column.number_input("Epochs", 1, 500, 30, key="train_epochs")
    minutes = minutes_column.number_input("Time budget (minutes, 0 = none)", 0.0, 24 * 60.0, 0.0, 5.0,
                                          key="train_minutes")
    batch_size = batch_column.selectbox("Batch size", [32, 64, 128, 256], index=1, key="train_batch")
    learning_rate = rate_column.number_input("Learning rate", 1e-5, 1e-1, TrainConfig.learning_rate, 1e-4,
                                             format="%.4f", key="train_lr")
    augment_column, weight_column, average_column = st.columns(3)
    augment = augment_column.toggle("Augmentation (flip, rotate, shift, zoom, erase)", True, key="train_augment")
    webcam_augment = augment and augment_column.toggle(
        "Webcam light and focus", False, key="train_webcam_augment",
        help="Also vary brightness, contrast, gamma and focus (blur), as classroom webcams do.")
    balancing = weight_column.radio("Class balancing", [*CLASS_WEIGHTS, "logit_adjusted"], horizontal=True,
                                    key="train_class_weight",
                                    help="Weigh rare classes (disgust) up: fully (balanced) or halfway (sqrt); or "
                                         "logit_adjusted: a loss with which the network learns the balanced odds "
                                         "(every emotion as likely) instead of its data's.")
    class_weight, loss = ("none", "logit_adjusted") if balancing == "logit_adjusted" else (balancing, TrainConfig.loss)
    swa_epochs = average_column.number_input(
        "Average the last N epochs (0 = keep the best)", 0, 500, 0, key="train_swa_epochs",
        help="Stochastic weight averaging: save the mean of the weights at the end of each of the last N epochs, "
             "at a constant learning rate. Mostly worth it when fine-tuning a trained network for a few epochs.")
    name_column, owner_column = st.columns(2)
    name = name_column.text_input("Save as (model name)", arch, key="train_name")
    owner = owner_column.text_input("Your name (shown to others while you train)", key="train_owner")
    existing = existing_model(name)
    replace = existing is not None and existing != DEFAULT_NAME and st.checkbox(
        "Replace the existing model", key="train_replace",
        help=f"A model named '{existing}' exists: tick to overwrite it with this one when the training ends.")
    if not st.button("Start training", type="primary", key="train_start"):
        return
    problem = name_problem(name, existing, replace)
    if problem is not None:
        st.error(problem)
        return
    config = TrainConfig(arch=arch, epochs=int(epochs), batch_size=int(batch_size), learning_rate=float(learning_rate),
                         augment=augment, webcam_augment=webcam_augment, class_weight=class_weight, loss=loss,
                         minutes=float(minutes) or None,
                         init_from=None if start == RANDOM_START else start, swa_epochs=int(swa_epochs),
                         schedule="constant" if swa_epochs else TrainConfig.schedule)
    with user_errors():
        config.validate(name)  # before an upload is written to disk
        if upload is not None:
            data_path = spool_upload(upload, Path(upload.name).suffix, jobs.inbox)
            description, delete = upload.name, True
        elif path_text.strip():
            data_path, description, delete = resolve_server_path(path_text), Path(path_text).name, False
        else:
            raise DataError("choose the training data first: upload a file or give a path")
        job = submit_training(jobs, data_path, config, name, owner=owner or "someone", data_description=description,
                              delete_data=delete)
        remember_job("train_job_id", job.job_id)
        st.rerun()


def trained_models() -> None:
    """The stored models that did not ship with the app, each deletable after a confirmation (not the
    default: every visitor starts with it)."""
    st.subheader("Models trained here")
    deleted = st.session_state.pop("train_deleted", None)
    if deleted is not None:
        st.success(f"Deleted '{deleted}'.")
    store = ModelStore()
    try:
        shipped = store.shipped()
    except FerError as error:
        st.error(str(error))
        return
    names = [name for name in store.names() if name not in shipped and name != DEFAULT_NAME]
    if not names:
        st.caption("No model has been trained here yet. The models that came with the app cannot be deleted.")
        return
    name = st.selectbox("Model to delete", names, key="train_delete_name",
                        help="Models trained on this server; the models that came with the app and the default "
                             "are not listed.")
    sure = st.checkbox(f"Yes, delete '{name}' for everyone on this server", key=f"train_delete_sure_{name}")
    if st.button("Delete model", key="train_delete", disabled=not sure):
        with user_errors():
            jobs.delete_model(name, store)
            st.session_state["train_deleted"] = name
            st.rerun()


show_job(my_job, "train_leave", follow=follow, outcome=show_outcome, form=training_form,
         note="Training takes the whole CPU, so jobs take turns; this page follows yours once it starts.")
st.divider()
queue_overview()
st.divider()
trained_models()
