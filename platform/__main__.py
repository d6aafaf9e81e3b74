"""The ML worker's platform: API ─▶ SQS ─▶ Fargate Spot worker (scaled on queue depth) ─▶ PostgreSQL."""

import pulumi
from mlw_alarms import AlarmsArgs, WorkerAlarms
from mlw_config import PlatformConfig
from mlw_dashboard import DashboardArgs, WorkerDashboard
from mlw_iam import IamArgs, WorkerIam
from mlw_images import ImagesArgs, WorkerImages
from mlw_network import NetworkArgs, WorkerNetwork
from mlw_params import ParamsArgs, WorkerParameters
from mlw_preflight import preflight
from mlw_queues import QueuesArgs, WorkerQueues
from mlw_scaling import QueueDepthScaling, ScalingArgs
from mlw_service import ServiceArgs, WorkerService

cfg = PlatformConfig.load()  # refuses placeholders, and a production stack whose alarms reach nobody
checked = preflight(cfg)  # roles, subnets, secrets, network path: before anything is created

queues = WorkerQueues("ml-worker-queues", QueuesArgs(
    names=cfg.names, aws=checked.aws, visibility_timeout=cfg.visibility_timeout, wait_time=cfg.wait_time,
    max_receive_count=cfg.max_receive_count, priority=cfg.priority_queue, sender_role_arns=cfg.sender_role_arns,
))

images = WorkerImages("ml-worker-images", ImagesArgs(cfg=cfg))

iam = WorkerIam("ml-worker-iam", IamArgs(
    names=cfg.names, aws=checked.aws, worker_repository_arn=images.worker_repository.arn,
    consumed_queue_arns=queues.consumed_arns, dlq_arn=queues.dlq_arn, api_role_arn=cfg.api_role_arn,
))

network = WorkerNetwork("ml-worker-network", NetworkArgs(cfg=cfg, facts=checked.network))

service = WorkerService("ml-worker-service", ServiceArgs(
    cfg=cfg, aws=checked.aws, image_uri=images.worker_image_uri, queues=queues, iam=iam, network=network,
))

scaling = QueueDepthScaling("ml-worker-scaling", ScalingArgs(
    cfg=cfg, cluster_name=service.cluster_name, service_name=service.service_name,
))

alarms = WorkerAlarms("ml-worker-alarms", AlarmsArgs(
    cfg=cfg, cluster_name=service.cluster_name, service_name=service.service_name,
))

dashboard = WorkerDashboard("ml-worker-dashboard", DashboardArgs(
    cfg=cfg, log_group_name=service.log_group_name, cluster_name=service.cluster_name,
    service_name=service.service_name,
    alarm_arns=[*alarms.arns, *(a.arn for a in scaling.alarms)],
))

params = WorkerParameters("ml-worker-parameters", ParamsArgs(
    names=cfg.names, queue_url=queues.queue.url, dlq_url=queues.dlq.url,
    priority_queue_url=queues.priority.url if queues.priority else None,
    cluster_name=service.cluster_name, service_name=service.service_name, log_group=service.log_group_name,
    dashboard_url=dashboard.url,
))

pulumi.export("ml_worker_queue_url", queues.queue.url)
pulumi.export("ml_worker_dlq_url", queues.dlq.url)
if queues.priority is not None:
    pulumi.export("ml_worker_priority_queue_url", queues.priority.url)
pulumi.export("ml_worker_cluster_name", service.cluster_name)
pulumi.export("ml_worker_service_name", service.service_name)
pulumi.export("ml_worker_log_group", service.log_group_name)
pulumi.export("ml_worker_dashboard_url", dashboard.url)
pulumi.export("base_image_uri", images.base_image_uri)
pulumi.export("worker_image_uri", images.worker_image_uri)
pulumi.export("alarm_topic_arn", alarms.topic_arn)
pulumi.export("ml_worker_security_group_id", network.security_group.id)
