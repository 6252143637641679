def test_script_job_runs_and_reports_its_output(responder):
    job = responder.submit("print(5 + 4)")
    assert job["status"] == "succeeded"
    assert job["stdout"] == "9\n"
    assert job["exit_status"] == 0
