__path__ = __import__("pkgutil").extend_path(__path__, __name__)  # noqa: E501  (must stay first: lets the colcon-installed emu_ros.msg/.action sit beside this source tree)
"""emu_ros: a ROS 2 package that lets a robot arm follow the Emu3.5 world model.

The core (model/, guidance/, bridge/, sim/) never imports rclpy; the ROS layer lives in
emu_ros.ros and is imported only by the nodes.
"""

__version__ = "0.1.0"
