"""java_error_summary: what a failing Kafka tool said, without pages of stack frames."""

from __future__ import annotations

from pipeline.stack.kafka import java_error_summary

TRACE = """[2026-11-23 20:41:07,120] ERROR something went wrong
java.lang.RuntimeException: Invalid cluster.id in /tmp/x/meta.properties
\tat kafka.tools.StorageTool$.formatCommand(StorageTool.scala:210)
\tat kafka.tools.StorageTool$.runFormatCommand(StorageTool.scala:120)
\tat kafka.tools.StorageTool$.execute(StorageTool.scala:79)
\tat kafka.tools.StorageTool$.main(StorageTool.scala:46)
\tat kafka.tools.StorageTool.main(StorageTool.scala)
Caused by: java.io.IOException: No space left on device
\tat java.base/sun.nio.ch.FileDispatcherImpl.write0(Native Method)
\tat java.base/sun.nio.ch.FileDispatcherImpl.write(FileDispatcherImpl.java:62)
\tat java.base/sun.nio.ch.IOUtil.writeFromNativeBuffer(IOUtil.java:132)
\tat java.base/sun.nio.ch.IOUtil.write(IOUtil.java:97)"""


def test_keeps_the_messages_and_the_first_frames_of_each_trace() -> None:
    summary = java_error_summary(TRACE).splitlines()
    assert summary[1] == "java.lang.RuntimeException: Invalid cluster.id in /tmp/x/meta.properties"
    assert "Caused by: java.io.IOException: No space left on device" in summary
    assert sum("StorageTool" in line for line in summary) == 3  # 3 of its 5 frames
    assert sum("sun.nio.ch" in line for line in summary) == 3
    assert len(summary) == 2 + 3 + 1 + 3


def test_output_without_a_trace_is_kept_whole() -> None:
    assert java_error_summary("Error: bad option -x\nusage: ...") == "Error: bad option -x\nusage: ..."
