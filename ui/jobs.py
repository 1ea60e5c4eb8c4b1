"""A session's background job on a page: its place in the queue while it waits, following it, its outcome."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from fer_core.service.jobs import WAITING, JobState
from fer_core.service.queues import job_queue
from ui.display import user_errors


def job_now(job_id: str | None) -> JobState | None:
    """The job ``job_id`` as the queue says now; None, with the queue's error shown, when it cannot say
    (Redis away)."""
    with user_errors():
        return job_queue().get(job_id)
    return None


def remembered_job(key: str) -> str | None:
    """This session's job: its id under ``key`` in the session state, or in the page's address (``?key=id``),
    where :func:`remember_job` also put it. When a replica goes away, the browser reconnects to another
    one with the same address, in a new session: the job is found again there."""
    job_id = st.session_state.get(key) or st.query_params.get(key)
    if job_id:
        st.session_state[key] = job_id
    return job_id


def remember_job(key: str, job_id: str) -> None:
    """Make ``job_id`` this session's job of ``key``, in its state and in the page's address."""
    st.session_state[key] = job_id
    st.query_params[key] = job_id


def forget_job(key: str) -> None:
    """This session no longer follows a job of ``key``."""
    st.session_state.pop(key, None)
    st.query_params.pop(key, None)


@st.fragment(run_every=2.0)
def waiting_turn(job: JobState, key: str, note: str = "") -> None:
    """A session's queued job while it waits: its place in its lane, and a button (``key``) to leave."""
    jobs = job_queue()
    with user_errors():
        place = jobs.place(job.job_id)
        if place is None:  # it has started, or left the queue
            st.rerun()
        st.info(f"Your {job.description} is {place.describe()}.{' ' + note if note else ''}")
        if st.button("Leave the queue", key=key, help="Take it out of the queue; nothing runs."):
            jobs.cancel(job.job_id)
            st.rerun()


def show_job(job: JobState | None, leave_key: str, follow: Callable[[JobState], None],
             outcome: Callable[[JobState], None],
             form: Callable[[], None], note: str = "") -> None:
    """This session's job (None: none yet) as its state asks: :func:`waiting_turn` (``leave_key``,
    ``note``) while it waits; ``follow`` while it runs; else the ``outcome`` of the last one, if any,
    above a divider, then ``form`` for the next one."""
    if job is not None and job.status == WAITING:
        waiting_turn(job, leave_key, note)
    elif job is not None and job.running:
        follow(job)
    else:
        if job is not None:
            outcome(job)
            st.divider()
        form()
