from django.apps import AppConfig


class UbscoreConfig(AppConfig):
    name = "ubscore"
    verbose_name = "UBSCore spot balances"
