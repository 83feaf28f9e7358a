# GUI tests (Qt Test, offscreen; defined here because tests/CMakeLists.txt skips tst_gui*):
#   gui_window   the full flow (open a fixture, QAT int8 channel-wise, click Train, charts and
#                runs table fill), stop and pause mid-epoch, bad dataset paths, closing mid-run,
#                option applicability, runs JSON round trip, the export entry
#   gui_latency  GUI-thread responsiveness while training, and click-to-first-loss-point time
#   gui_summary  the model summary window (Summary button, View menu) and its errors
#   gui_datasets colour datasets in the Dataset dock (CIFAR layout, image folder): colour
#                thumbnails, the shape line, and the Resize field fixing a mixed-size folder
#   gui_plans    the Training dock's per-layer plan table (edits, sizes, applicability)
#   gui_ptq      the Ranges chart before and after PTQ cross-layer equalization
if(TARGET quantscope::ui)
  qs_add_test(gui_window LIBS quantscope::ui TIMEOUT 600 LABELS gui)
  qs_add_test(gui_datasets LIBS quantscope::ui TIMEOUT 120 LABELS gui)
  qs_add_test(gui_latency LIBS quantscope::ui TIMEOUT 600 LABELS "gui;slow")
  qs_add_test(gui_summary LIBS quantscope::ui TIMEOUT 120 LABELS gui)
  qs_add_test(gui_plans LIBS quantscope::ui TIMEOUT 120 LABELS gui)
  qs_add_test(gui_ptq LIBS quantscope::ui TIMEOUT 120 LABELS gui)
endif()
