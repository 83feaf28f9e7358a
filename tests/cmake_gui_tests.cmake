# GUI tests (Qt Test, offscreen; defined here because tests/CMakeLists.txt skips tst_gui*):
#   gui_window   the full flow (open a fixture, QAT int8 channel-wise, click Train, charts and
#                runs table fill), stop and pause mid-epoch, bad dataset paths, closing mid-run,
#                option applicability
#   gui_files    runs JSON and CSV, settings that persist, a model file that starts a run, the
#                Layer compare tab, exporting a run's model
#   gui_latency  GUI-thread responsiveness while training, and click-to-first-loss-point time
#   gui_summary  the model summary window (Summary button, View menu) and its errors
#   gui_datasets colour datasets in the Dataset dock (CIFAR layout, image folder): colour
#                thumbnails, the shape line, and the Resize field fixing a mixed-size folder
#   gui_plans    the Training dock's per-layer plan table (edits, sizes, applicability)
#   gui_screen_WxH  the first window on a WxH screen (offscreen platform with a screen file):
#                it fits, Train and the charts are on screen, saved geometry is clamped, the
#                Analysis tab fits without scrolling at 1366x768, and across at 1024x700
#   gui_analysis the Analysis tab: the validation split (the CLI's), the run analysed, analysis and
#                training taking turns, closing mid-search
#   gui_sensitivity  the Sensitivity page: heatmap, modes, formats, histograms, Stop
#   gui_search   the Mixed-bit search page: chart, plan files, a refused budget, a 1024x700 window,
#                fine-tune with a plan, Stop
#   gui_lsq      the LSQ options' applicability and the Step sizes chart of a real LSQ run
#   gui_ptq      the Ranges chart before and after PTQ cross-layer equalization
#   gui_runs_table  the runs table's chart colours (distinct over a 40-run session), and its repaints do
#                not grow the heap
#   gui_charts   tick labels (no "-0.00"), the loss axis covering spikes, run colours that follow
#                the run, legends in the runs table's order, histograms, the window at 1024x700
#   gui_layer_charts  the Layers and SQNR charts' layer names, exact points, a stale comparison,
#                a run without a model
if(TARGET quantscope::ui)
  qs_add_test(gui_window LIBS quantscope::ui TIMEOUT 600 LABELS gui)
  qs_add_test(gui_files LIBS quantscope::ui TIMEOUT 600 LABELS gui)
  qs_add_test(gui_datasets LIBS quantscope::ui TIMEOUT 120 LABELS gui)
  qs_add_test(gui_latency LIBS quantscope::ui TIMEOUT 600 LABELS "gui;slow")
  qs_add_test(gui_summary LIBS quantscope::ui TIMEOUT 120 LABELS gui)
  qs_add_test(gui_plans LIBS quantscope::ui TIMEOUT 120 LABELS gui)
  add_executable(tst_gui_screen tst_gui_screen.cpp)
  target_link_libraries(tst_gui_screen PRIVATE quantscope::core quantscope::ui Qt6::Test qs_warnings)
  foreach(size 1366x768 1280x720)
    string(REPLACE "x" ";" wh ${size})
    list(GET wh 0 w)
    list(GET wh 1 h)
    set(cfg ${CMAKE_CURRENT_BINARY_DIR}/offscreen_${size}.json)
    file(WRITE ${cfg} "{\"screens\":[{\"name\":\"screen\",\"x\":0,\"y\":0,\"width\":${w},\"height\":${h},\"logicalDpi\":96,\"logicalBaseDpi\":96,\"dpr\":1}]}\n")
    add_test(NAME gui_screen_${size} COMMAND tst_gui_screen)
    math(EXPR timeout "120 * ${QS_TEST_TIMEOUT_SCALE}")
    set_tests_properties(gui_screen_${size} PROPERTIES
      ENVIRONMENT "QT_QPA_PLATFORM=offscreen:configfile=${cfg};QS_SCREEN=${size}" LABELS gui TIMEOUT ${timeout})
  endforeach()
  qs_add_test(gui_analysis LIBS quantscope::ui TIMEOUT 600 LABELS gui)
  qs_add_test(gui_sensitivity LIBS quantscope::ui TIMEOUT 600 LABELS gui)
  qs_add_test(gui_search LIBS quantscope::ui TIMEOUT 600 LABELS gui)
  qs_add_test(gui_lsq LIBS quantscope::ui TIMEOUT 120 LABELS gui)
  qs_add_test(gui_ptq LIBS quantscope::ui TIMEOUT 120 LABELS gui)
  qs_add_test(gui_runs_table LIBS quantscope::ui TIMEOUT 120 LABELS gui)
  qs_add_test(gui_charts LIBS quantscope::ui TIMEOUT 120 LABELS gui)
  qs_add_test(gui_layer_charts LIBS quantscope::ui TIMEOUT 120 LABELS gui)
endif()
